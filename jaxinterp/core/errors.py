"""One error family. Every error jaxinterp raises for a bad argument or a bad file is a
`JaxinterpError` (a `ValueError`, so ``except ValueError`` keeps working), whose message
names what is wrong and what was expected. The classes below say which boundary found
the problem; docs/errors.md lists what raises each."""

from __future__ import annotations

__all__ = [
    "JaxinterpError",
    "ConfigError",
    "SiteError",
    "TokenError",
    "InterventionError",
    "MetricError",
    "PromptPairError",
    "PairBatchError",
    "AttentionMaskError",
    "ReadPositionError",
    "CheckpointError",
    "UnsupportedArchitectureError",
    "TokenizerError",
    "PatchingError",
    "PathPatchingError",
    "ProcessingError",
    "VerifyError",
    "ShardingError",
    "ResumeError",
]


class JaxinterpError(ValueError):
    """Base of every jaxinterp error."""


class ConfigError(JaxinterpError):
    """A `ModelConfig` field (or a config.json entry) that is missing, of the wrong type
    or inconsistent with the others."""


class SiteError(JaxinterpError, KeyError):
    """An unknown or malformed hook-site name (also a `KeyError`: caches are looked up by it)."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TokenError(JaxinterpError):
    """Tokens that the model cannot read: not integers, out of the vocabulary, too long."""


class InterventionError(JaxinterpError):
    """An intervention that does not fit the site it names: location out of range or on a
    missing axis, a value of the wrong shape."""


class MetricError(JaxinterpError):
    """A metric that does not return a scalar, or that reads outside the logits."""


class CheckpointError(JaxinterpError):
    """A checkpoint that does not match what the architecture needs: missing,
    unexpected or mis-shaped tensors, a corrupt file, or an unsupported architecture."""


class UnsupportedArchitectureError(CheckpointError):
    """A checkpoint of an architecture (HF ``model_type`` or GGUF ``general.architecture``)
    that jaxinterp cannot load; the message lists the supported ones."""


class TokenizerError(JaxinterpError):
    """A tokenizer that cannot be built, or text/ids it cannot encode or decode."""


class PatchingError(JaxinterpError):
    """An activation-patching request that cannot be carried out as asked."""


class PathPatchingError(JaxinterpError):
    """A path-patching request whose senders, receivers or paths do not fit the model."""


class PromptPairError(PatchingError, PathPatchingError):
    """A clean/corrupted prompt pair that cannot be compared position by position. Every
    technique raises this one type (also a `PatchingError` and a `PathPatchingError`, the
    types older code caught)."""


class PairBatchError(PromptPairError):
    """A batch of prompt pairs whose parts disagree: clean and corrupted tokens with
    different numbers of pairs, or a per-pair metric (or per-pair arrays) whose pair axis
    is not the batch's."""


class AttentionMaskError(PairBatchError):
    """The attention mask of padded prompt pairs: not the tokens' ``[batch, pos]`` shape,
    not 0/1, not right-padded (real tokens first), or a pair with no real token."""


class ReadPositionError(MetricError, PairBatchError):
    """A per-pair read position outside its prompt: beyond the positions, or on padding."""


class ProcessingError(JaxinterpError):
    """A weight-processing step that would change the model's function."""


class VerifyError(JaxinterpError):
    """A checkpoint verification (`jaxinterp verify`) that cannot run as asked: a bad
    tolerance, no prompts, a prompt that encodes to no tokens."""


class ShardingError(JaxinterpError):
    """A mesh or axis rules that cannot shard the model as asked: an unknown logical axis,
    a mesh axis the mesh lacks, a mesh larger than the devices."""


class ResumeError(JaxinterpError):
    """A sweep checkpoint directory that does not belong to this sweep (another model,
    prompts, metric, site, engine or chunking: the message names which), or a sweep
    input that cannot be fingerprinted for checkpointing."""
