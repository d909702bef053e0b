"""Editing behaviour: steering vectors, refusal directions, function vectors, ROME, generation with interventions."""
