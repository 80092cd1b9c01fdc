"""Shared business authority: IAM, policy, billing, audit, evidence, registry, access."""
