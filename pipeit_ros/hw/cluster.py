"""A cluster: the CPUs of one core type that a stage may use together (the paper's unit of placement)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Cluster:
    """CPUs of one core type that a stage may use together; capacity is per core, fastest cluster = 1.0."""

    name: str
    cpus: tuple
    core_type: str
    capacity: float
    max_freq_khz: int | None = None
    emulate_share: float | None = None

    def __post_init__(self):
        object.__setattr__(self, 'cpus', tuple(sorted(int(c) for c in self.cpus)))
        object.__setattr__(self, 'capacity', float(self.capacity))

    @property
    def size(self):
        return len(self.cpus)

    def to_dict(self):
        d = {'name': self.name, 'cpus': list(self.cpus), 'size': self.size, 'core_type': self.core_type,
             'capacity': self.capacity, 'max_freq_khz': self.max_freq_khz}
        if self.emulate_share is not None:
            d['emulate'] = {'share': self.emulate_share}
        return d
