"""Node-side metric sources: GPU readings (NVML, or a clearly labelled simulation) and the
collector that joins them with each workload's CPU and memory."""
