"""The ROS 2 skin: planner and container processes, stage nodes, camera source. Only this package imports rclpy."""
