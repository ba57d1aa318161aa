"""Frame sources (camera, video, images, patterns) and preprocessing into model inputs."""
