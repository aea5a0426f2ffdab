"""What a host does with its own token beyond its registration: own model names."""
