"""The App SDK (manifests, controllers, platform client) and the public HTTP client."""
