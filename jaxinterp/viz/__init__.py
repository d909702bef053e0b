"""Visualisation: patching heatmaps, attention patterns (PNG and interactive HTML),
logit-lens tables, feature geometry of toy models, and figure/HTML helpers.

Every function returns a matplotlib `Figure` (or an HTML string) and, given ``path``,
writes it. Nothing uses pyplot's global state; HTML loads nothing from the network.
"""

from .attention import attention_html, attention_patterns, attention_widget
from .causal_trace import plot_causal_trace
from .compare import compare_scatter
from .figures import figure_png, new_figure, png_data_uri, save_figure
from .heatmap import patching_heatmap, score_heatmaps
from .labelled_plot import plot_labelled
from .labels import token_labels, visible_token
from .lens_table import logit_lens_html, logit_lens_table
from .tms import tms_geometry

__all__ = [
    "patching_heatmap",
    "score_heatmaps",
    "attention_patterns",
    "attention_widget",
    "attention_html",
    "logit_lens_table",
    "logit_lens_html",
    "tms_geometry",
    "compare_scatter",
    "figure_png",
    "png_data_uri",
    "new_figure",
    "save_figure",
    "token_labels",
    "visible_token",
    "plot_causal_trace",
    "plot_labelled",
]
