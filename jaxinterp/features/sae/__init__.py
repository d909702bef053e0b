"""Sparse autoencoders and transcoders: modules, training on streamed activations,
metrics, splicing into a model, feature attribution, dashboards' data, and files.

    from jaxinterp.features import sae as S
    cfg = S.SAEConfig(d_in=576, d_sae=4608, site="resid_pre", layer=15)
    store = S.ModelStore(model, S.token_contexts(tok, S.corpus_texts(path), 128), "resid_pre", 15)
    result = S.train_sae(S.init_sae("topk", cfg, jax.random.key(0), k=32), store, S.TrainConfig(n_steps=1000))
    S.evaluate(model, result.sae, held_out_contexts)
    model(tokens, [S.splice(result.sae, error=True)])
"""

from .attribution import feature_acts, feature_attribution, feature_patch
from .config import SAEConfig
from .dashboard import FeatureDashboard, TopContext, all_feature_acts, feature_dashboards
from .data import corpus_texts, token_contexts
from .errors import SAEError
from .io import SAEFileError, load_gemma_scope, load_sae, load_saelens, save_sae
from .metrics import (
    dead_fraction,
    dense_fraction,
    evaluate,
    evaluate_reconstruction,
    firing_rates,
    fvu,
    l0,
    next_token_ce,
)
from .modules import SAE, VARIANTS, BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE, init_sae
from .splice import SpliceArgs, splice, spliced_forward, transcoder_inputs
from .store import ActivationStore, ArrayStore, ModelStore, model_activations
from .train import TrainConfig, TrainResult, auxk_loss, train_sae

__all__ = [
    "SAE",
    "ReLUSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "VARIANTS",
    "init_sae",
    "SAEConfig",
    "SAEError",
    "SAEFileError",
    "save_sae",
    "load_sae",
    "load_saelens",
    "load_gemma_scope",
    "corpus_texts",
    "token_contexts",
    "ActivationStore",
    "ArrayStore",
    "ModelStore",
    "model_activations",
    "TrainConfig",
    "TrainResult",
    "train_sae",
    "auxk_loss",
    "l0",
    "fvu",
    "firing_rates",
    "dead_fraction",
    "dense_fraction",
    "evaluate",
    "evaluate_reconstruction",
    "next_token_ce",
    "splice",
    "SpliceArgs",
    "spliced_forward",
    "transcoder_inputs",
    "feature_acts",
    "feature_attribution",
    "feature_patch",
    "FeatureDashboard",
    "TopContext",
    "all_feature_acts",
    "feature_dashboards",
]
