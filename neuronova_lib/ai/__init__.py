"""NeuroNova's AI: training, evaluation, the model registry and its promotion gate."""
