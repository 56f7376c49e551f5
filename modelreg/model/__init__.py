"""Model packaging: directory to ModelPack artifact and back."""
