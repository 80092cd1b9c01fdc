"""Provider and environment specifics (local host, Slurm, Kubernetes, GPU inventory).

Adapters depend on aicloud.shared only. Products reach them through the interface in each
adapter family's ``base`` module; the composition root (aicloud.runtime) picks concrete ones.
"""
