"""Reading representations: probes, sparse autoencoders and transcoders, features as gradients, feature visualisation, representation geometry."""
