"""Built-in debuggers: each returns plain, batch-first data and tags it with its semantic kind.

=========================  =================  ===============================================================
debugger                   fed by             keeps
=========================  =================  ===============================================================
FeatureMapDebugger         forward hook       a layer's (C, H, W) map, shrunk, and its stats
ActivationStatsDebugger    forward hook       per-datapoint activation statistics, per-channel means/stds
LayerOutputDebugger        forward hook       a layer's output, optionally average-pooled
AttentionDebugger          pre + post hooks   per-head softmax(q kᵀ/√d) of every SDPA / MHA call in a module:
                                              summaries, top-k keys, maps within a byte budget
GradCAMDebugger            re-run with grad   GradCAM heatmap at input size for a target class (or one per datapoint)
GradientsDebugger          re-run, backward   gradient of a per-datapoint objective at a layer's output
DatapointRecorder          the batch          inputs, labels, predictions and meta_info, shrunk
=========================  =================  ===============================================================
"""

from __future__ import annotations

from eval_viewer.debuggers.builtins.activations import ActivationStatsDebugger
from eval_viewer.debuggers.builtins.attention import AttentionDebugger, attention_probabilities
from eval_viewer.debuggers.builtins.feature_maps import FeatureMapDebugger, LayerOutputDebugger
from eval_viewer.debuggers.builtins.gradcam import GradCAMDebugger, gradcam_from
from eval_viewer.debuggers.builtins.gradients import GradientsDebugger
from eval_viewer.debuggers.builtins.recorder import DatapointRecorder

__all__ = [
    "ActivationStatsDebugger",
    "AttentionDebugger",
    "DatapointRecorder",
    "FeatureMapDebugger",
    "GradCAMDebugger",
    "GradientsDebugger",
    "LayerOutputDebugger",
    "attention_probabilities",
    "gradcam_from",
]
