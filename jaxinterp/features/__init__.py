"""Reading representations: probes, sparse autoencoders and transcoders, features as gradients, feature visualisation, representation geometry."""

# The group's public modules (each has a page in the API reference).
__all__ = [
    "sae",
    "datasets",
    "activations",
    "probes",
    "sparse_probing",
    "control_tasks",
    "space_time",
    "gradients",
    "visualise",
    "geometry",
    "hierarchies",
    "universal_neurons",
    "visualise_image",
]
