"""Configuration: errors, the settings hash and resolvers (core), the typed Settings (settings)."""
