"""Pipe-it for ROS 2: CNN pipelines whose stages each run on the cores of one CPU cluster.

The core modules (everything outside ``pipeit_ros.ros``) never import rclpy, so planning, running and
benchmarking work and are tested without a ROS graph.
"""
__version__ = '0.1.0'
