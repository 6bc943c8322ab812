"""A candidate's memory, measured in a fresh process of its own (:mod:`pipeit_ros.engine.footprint`, which
says what is counted): ``pipeit bench`` runs one child per candidate, one after another, before it builds any
candidate itself."""
from pipeit_ros.engine.footprint import FRAMES, TIMEOUT_S, measure

__all__ = ['FRAMES', 'TIMEOUT_S', 'measure']
