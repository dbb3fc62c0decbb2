"""NeuroNova's AI: training, the model registry, inference (see docs/ai.md)."""
