"""Products built on the platform services: GPUaaS first, then the App SDK reference apps."""
