"""Editing behaviour: steering vectors, refusal directions, function vectors, ROME, generation with interventions."""

# The group's public modules (each has a page in the API reference).
__all__ = [
    "generation",
    "steering",
    "refusal",
    "chat",
    "instructions",
    "function_vectors",
    "icl_tasks",
    "rome",
    "sentiment",
    "common",
    "greedy",
]
