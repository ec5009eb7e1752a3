"""LT4REC: neuron-level sparse sharing between tasks, masks found by lottery-ticket pruning
(Xiao et al., "LT4REC: A Lottery Ticket Hypothesis Based Multi-task Practice for Video
Recommendation System", arXiv 2008.09872; released as NCS4CVR)."""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfrec_onerec.layers import DotInteraction, MaskedMLP
from tfrec_onerec.models.multitask.base import MultiTaskModel
from tfrec_onerec.models.registry import register


def prune_masks(kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray], rate: float) -> list:
    """One round of global magnitude pruning.

    Of the weights the masks still keep, across *all* layers together, the
    ``round(rate * kept)`` of smallest magnitude are dropped (ties broken by position).

    Args:
        kernels: the layers' trained kernels.
        masks: their current 0/1 masks (same shapes).
        rate: the fraction of the kept weights to drop, in [0, 1).

    Returns:
        The new masks (float32 0/1 arrays); a dropped weight never comes back.
    """
    kept = np.concatenate([np.abs(k)[m > 0] for k, m in zip(kernels, masks)])
    drop = int(round(rate * kept.size))
    if drop == 0:
        return [np.asarray(m, np.float32) for m in masks]
    magnitudes = np.concatenate([np.where(m > 0, np.abs(k), np.inf).ravel() for k, m in zip(kernels, masks)])
    order = np.argsort(magnitudes, kind="stable")
    flat = np.concatenate([np.asarray(m, np.float32).ravel() for m in masks])
    flat[order[:drop]] = 0.0
    out, start = [], 0
    for m in masks:
        out.append(flat[start:start + m.size].reshape(m.shape))
        start += m.size
    return out


def pruning_rate(final_density: float, rounds: int) -> float:
    """The per-round rate ``p = 1 - r^(1/n)`` that leaves ``final_density`` after `rounds` rounds."""
    return 1.0 - final_density ** (1.0 / rounds)


@register("lt4rec", family="pointwise")
class LT4Rec(MultiTaskModel):
    """LT4REC sparse sharing: one shared MLP, each task seeing it through its own mask.

    **Architecture** (as the released code): every feature is a field vector (id features
    embedded, sequences mean-pooled); fields whose width differs from ``interaction_dim``
    are mapped to it linearly; the pairwise dot products of the fields (DLRM's interaction)
    and the concatenated field vectors feed a shared MLP of
    :class:`~tfrec_onerec.layers.MaskedDense` layers (512-256-128), which task ``k``
    reads through mask ``k``; each task has a linear head.

    **Training** (``fit``): first, per task, the mask search: ``pruning_rounds + 1`` rounds
    of ``search_epochs`` epochs training that task alone; after each round but the last,
    global magnitude pruning drops the fraction ``p = 1 - final_density^(1/pruning_rounds)``
    of the weights its mask still keeps (0.331 per round for 4 rounds to 20%), and every
    weight and the optimizer state are rewound to their initial values. The task keeps the
    mask of the round with the best validation AUC (the last mask without validation data).
    Then joint training from the initial weights: each step trains one task, in turn, on
    its own mask. A weight masked for a task is exactly zero for it and gets no gradient from
    it; a weight every task masks never changes.

    Choices where the paper and code leave room: the dense mask (round 0) is a candidate
    too, so a task may keep the whole network; fields of different widths are projected
    (the released code had 20 fields of width 16); the interaction keeps each pair once
    (the code's full 20 x 20 matrix repeats them); the tasks' own losses are used (the
    code's focal loss for CTR and MSE on play rate are data choices).

    **Optimizers**: by default one shared optimizer, as the released code (a weight two tasks
    share then carries one task's momentum into the other's steps). With
    ``optimizer_per_task=True`` each task's steps go through its own copy of the compiled
    optimizer (own moments and step count); the copies are rebuilt, not saved, with the
    model (only the compiled optimizer's state is in a ``.keras`` file).

    Args:
        interaction_dim: width of the field vectors in the interaction. Default 16.
        shared_units: widths of the shared masked MLP. Default ``(512, 256, 128)``.
        pruning_rounds: pruning rounds per task. Default 4.
        final_density: the fraction of shared weights left after the last round. Default 0.2.
        search_epochs: epochs of each search round. Default 1.
        optimizer_per_task: one optimizer per task instead of a shared one. Default False.
        **kwargs: as :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel` (fixed
            loss weighting only).

    Export: besides ``serving_default`` and ``predict``, one signature per task,
    ``serving_<task>`` (serialized tf.Example in, that task's score out), which runs that
    task's path alone, its mask baked in.

    Attributes:
        search_log: one ``{"task", "round", "density", "validation"}`` per search round.
    """

    task_signatures = True  # the exporter adds serving_<task> per task

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), interaction_dim: int = 16,
                 shared_units: Sequence[int] = (512, 256, 128), pruning_rounds: int = 4, final_density: float = 0.2,
                 search_epochs: int = 1, optimizer_per_task: bool = False, **kwargs):
        super().__init__(feature_spec, tasks, tower_units=(), field_dim=int(interaction_dim), **kwargs)
        if self.loss_weighting != "fixed" or any(t.weight == 0 for t in self.tasks):
            raise ValueError("LT4Rec trains one task per step (alternating); it takes the fixed loss weighting "
                             "and tasks of positive weight.")
        if not 0.0 < final_density <= 1.0 or int(pruning_rounds) < 1 or int(search_epochs) < 1:
            raise ValueError("LT4Rec: final_density must be in (0, 1], pruning_rounds and search_epochs >= 1; got "
                             f"{final_density}, {pruning_rounds}, {search_epochs}.")
        self.interaction_dim = int(interaction_dim)
        self.shared_units = [int(u) for u in shared_units]
        self.pruning_rounds = int(pruning_rounds)
        self.final_density = float(final_density)
        self.search_epochs = int(search_epochs)
        self.optimizer_per_task = bool(optimizer_per_task)
        self.interaction = DotInteraction(name="interaction")
        self.shared = MaskedMLP(self.shared_units, len(self.tasks), self.activation, name="shared")
        self.heads = [keras.layers.Dense(1, name=f"{t.name}_logit") for t in self.tasks]
        # -1: joint training (tasks take turns); k: only task k trains (mask search).
        self.active_task = self.add_weight(name="active_task", shape=(), dtype="int32", trainable=False,
                                           initializer=keras.initializers.Constant(-1))
        self.masks_searched = self.add_weight(name="masks_searched", shape=(), dtype="int32", trainable=False,
                                              initializer="zeros")
        self.train_steps = self.add_weight(name="train_steps", shape=(), dtype="int32", trainable=False,
                                           initializer="zeros")  # whose turn it is in joint training
        self.search_log = []
        self._task_optimizers = None

    def represent(self, x, training=None):
        raise NotImplementedError("LT4Rec reads the field vectors, not the flat features; see call().")

    def shared_input(self, features):
        """(batch, pairs + fields * interaction_dim): the interaction and the field vectors."""
        stacked = self.flat.stacked(features)
        return ops.concatenate([self.interaction(stacked), ops.reshape(stacked, (-1, stacked.shape[1] * stacked.shape[2]))],
                               axis=-1)

    def call(self, inputs, training=None):
        x = self.shared_input(self.checked_inputs(inputs))
        return {t.name: self.task_output(t, head(self.shared(x, mask_index=k)))
                for k, (t, head) in enumerate(zip(self.tasks, self.heads))}

    def current_task(self):
        """The index of the task this training step trains (scalar int32)."""
        return ops.where(self.active_task >= 0, self.active_task, ops.mod(self.train_steps, len(self.tasks)))

    def weighted_total(self, losses):
        weights = ops.convert_to_tensor([t.weight for t in self.tasks], dtype=losses.dtype)
        return ops.sum(ops.one_hot(self.current_task(), len(self.tasks), dtype=losses.dtype) * weights * losses)

    def task_optimizers(self) -> list:
        """One optimizer per task (the compiled one is task 0's), built on the model's weights."""
        if self._task_optimizers is None:
            copies = [type(self.optimizer).from_config(self.optimizer.get_config()) for _ in self.tasks[1:]]
            for optimizer in copies:
                optimizer.build(self.trainable_variables)
            self._task_optimizers = [self.optimizer] + copies
        return self._task_optimizers

    def train_step(self, data):
        if not self.optimizer_per_task:
            metrics = super().train_step(data)
            self.train_steps.assign_add(1)
            return metrics
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        gradients = tape.gradient(loss, self.trainable_variables)
        branches = [lambda optimizer=optimizer: optimizer.apply(gradients, self.trainable_variables)
                    for optimizer in self.task_optimizers()]
        tf.switch_case(self.current_task(), branches)
        self.train_steps.assign_add(1)
        self._loss_tracker.update_state(loss * tf.distribute.get_strategy().num_replicas_in_sync,
                                        sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # -- the mask search ----------------------------------------------------------------------
    @property
    def masked_layers(self) -> list:
        return self.shared.dense_layers

    def mask_density(self, task_index: int) -> float:
        """The fraction of shared weights task `task_index`'s mask keeps."""
        masks = [ops.convert_to_numpy(layer.masks[task_index]) for layer in self.masked_layers]
        return float(sum(m.sum() for m in masks) / sum(m.size for m in masks))

    def fit(self, x=None, y=None, epochs=1, verbose="auto", validation_data=None, **kwargs):
        """Searches each task's mask (once; see the class docstring), then trains jointly."""
        if not int(ops.convert_to_numpy(self.masks_searched)):
            self.search_masks(x, validation_data, verbose=verbose)
        return super().fit(x, y, epochs=epochs, verbose=verbose, validation_data=validation_data, **kwargs)

    def search_masks(self, train, validation=None, verbose="auto"):
        """Finds every task's mask by iterative pruning with rewinding, then rewinds the weights.

        Args:
            train: the training batches (as for ``fit``; the model must be compiled).
            validation: batches to pick each task's best round on (optional).
        """
        self.optimizer.build(self.trainable_variables)
        optimizers = self.task_optimizers() if self.optimizer_per_task else [self.optimizer]
        optimizer_variables = [v for optimizer in optimizers for v in optimizer.variables]
        start = [ops.convert_to_numpy(v) for v in self.trainable_variables]
        start_optimizer = [ops.convert_to_numpy(v) for v in optimizer_variables]

        def rewind():
            for variable, value in zip(self.trainable_variables, start):
                variable.assign(value)
            for variable, value in zip(optimizer_variables, start_optimizer):
                variable.assign(value)

        rate = pruning_rate(self.final_density, self.pruning_rounds)
        for k, task in enumerate(self.tasks):
            self.active_task.assign(k)
            best = None
            for round_ in range(self.pruning_rounds + 1):
                keras.Model.fit(self, train, epochs=self.search_epochs, shuffle=False, verbose=0)
                score = self._validation_score(task, validation)
                masks = [ops.convert_to_numpy(layer.masks[k]) for layer in self.masked_layers]
                entry = {"task": task.name, "round": round_, "density": self.mask_density(k), "validation": score}
                self.search_log.append(entry)
                if verbose:
                    print(f"LT4Rec mask search: {task.name} round {round_}/{self.pruning_rounds}, density "
                          f"{entry['density']:.3f}, validation {score:.4f}", flush=True)
                if best is None or score >= best[0]:
                    best = (score, masks)
                if round_ < self.pruning_rounds:
                    kernels = [ops.convert_to_numpy(layer.kernel) for layer in self.masked_layers]
                    self._set_masks(k, prune_masks(kernels, masks, rate))
                rewind()
            self._set_masks(k, best[1] if validation is not None else
                            [ops.convert_to_numpy(layer.masks[k]) for layer in self.masked_layers])
        self.active_task.assign(-1)
        self.train_steps.assign(0)
        self.masks_searched.assign(1)

    def _set_masks(self, task_index: int, masks: Sequence[np.ndarray]):
        for layer, mask in zip(self.masked_layers, masks):
            layer.masks[task_index].assign(mask)

    def _validation_score(self, task, validation) -> float:
        """The task's validation AUC (binary) or negative RMSE; nan without validation data."""
        if validation is None:
            return float("nan")
        results = self.evaluate(validation, verbose=0, return_dict=True)
        if task.kind == "binary":
            return float(results[f"{task.name}_auc"])
        return -float(results[f"{task.name}_rmse"])

    def get_config(self):
        config = super().get_config()
        del config["tower_units"]
        return {**config, "interaction_dim": self.interaction_dim, "shared_units": self.shared_units,
                "pruning_rounds": self.pruning_rounds, "final_density": self.final_density,
                "search_epochs": self.search_epochs, "optimizer_per_task": self.optimizer_per_task}
