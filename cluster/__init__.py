"""Ray cluster-launcher configs (gpu.yaml, onprem.yaml) and their offline validation."""
