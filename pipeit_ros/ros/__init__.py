"""The ROS 2 skin: planner, container and camera nodes. rclpy is imported here, in testing/ and in cli/ only."""
