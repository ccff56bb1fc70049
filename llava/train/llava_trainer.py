"""LLaVATrainer: transformers.Trainer with upstream LLaVA's sampler, optimizer groups and projector saves."""
import os
from typing import List, Optional

import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


# ---- length / modality grouped sampling ---------------------------------------------------------
def split_to_even_chunks(indices, lengths, num_chunks):
    """Split `indices` into `num_chunks` chunks of equal size, balancing the total length greedily
    (round-robin when the count does not divide)."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    totals = [0] * num_chunks
    for index in indices:
        shortest = min((c for c in range(num_chunks) if len(chunks[c]) < per_chunk), key=lambda c: totals[c])
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
    return chunks


def get_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    """Random permutation -> megabatches of world_size * batch_size, each sorted by length (longest first)
    and split into world_size balanced chunks."""
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    out = []
    for start in range(0, len(indices), size):
        mega = sorted(indices[start:start + size], key=lambda i: lengths[i], reverse=True)
        for chunk in split_to_even_chunks(mega, lengths, world_size):
            out.extend(chunk)
    return out


def get_modality_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    """Each megabatch holds one modality (image samples have positive lengths, text-only negative); the
    partial last megabatches of both modalities go together at the end."""
    assert all(length != 0 for length in lengths), "Should not have zero length."
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return get_length_grouped_indices([abs(x) for x in lengths], batch_size, world_size, generator)
    mm = [(i, l) for i, l in enumerate(lengths) if l > 0]
    lang = [(i, -l) for i, l in enumerate(lengths) if l < 0]
    size = world_size * batch_size

    def megabatches(pairs):
        idx = [i for i, _ in pairs]
        lens = [l for _, l in pairs]
        order = [idx[j] for j in get_length_grouped_indices(lens, batch_size, world_size, generator)]
        return [order[s:s + size] for s in range(0, len(order), size)]

    mm_mega, lang_mega = megabatches(mm), megabatches(lang)
    last = mm_mega[-1] + lang_mega[-1]
    mega = mm_mega[:-1] + lang_mega[:-1]
    perm = torch.randperm(len(mega), generator=generator).tolist()
    mega = [mega[i] for i in perm]
    abs_len = [abs(x) for x in lengths]
    if last:
        mega.append(sorted(last, key=lambda i: abs_len[i], reverse=True))
    return [i for m in mega for i in m]


class LengthGroupedSampler(Sampler):
    """Upstream's sampler: length-grouped batches, optionally one modality per megabatch."""

    def __init__(self, batch_size: int, world_size: int, lengths: Optional[List[int]] = None, generator=None,
                 group_by_modality: bool = False):
        if lengths is None:
            raise ValueError("Lengths must be provided.")
        self.batch_size, self.world_size, self.lengths = batch_size, world_size, lengths
        self.generator, self.group_by_modality = generator, group_by_modality

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        fn = get_modality_length_grouped_indices if self.group_by_modality else get_length_grouped_indices
        abs_or_signed = self.lengths if self.group_by_modality else [abs(x) for x in self.lengths]
        return iter(fn(abs_or_signed, self.batch_size, self.world_size, generator=self.generator))


# ---- trainer ------------------------------------------------------------------------------------
class LLaVATrainer(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not getattr(self.args, "group_by_modality_length", False):
            return super()._get_train_sampler(train_dataset) if train_dataset is not None else super()._get_train_sampler()
        return LengthGroupedSampler(
            self.args.train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            lengths=dataset.modality_lengths,
            group_by_modality=True,
        )

    def _prepare_inputs(self, inputs):
        """Pixels in the model's dtype (the collator gives float32)."""
        inputs = super()._prepare_inputs(inputs)
        images = inputs.get("images")
        if images is not None:
            dtype = self.model.get_input_embeddings().weight.dtype
            if isinstance(images, list):
                inputs["images"] = [im.to(device=self.args.device, dtype=dtype) for im in images]
            else:
                inputs["images"] = images.to(dtype=dtype)
        return inputs

    def create_optimizer(self, model=None):
        """Weight decay on non-bias, non-norm parameters; with --mm_projector_lr the projector's parameters
        get their own learning rate (four groups)."""
        if self.optimizer is not None or self.args.mm_projector_lr is None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        groups = []
        for is_projector in (False, True):
            for has_decay in (True, False):
                params = [p for n, p in named if ("mm_projector" in n) == is_projector and (n in decay) == has_decay]
                if not params:
                    continue
                group = {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0}
                if is_projector:
                    group["lr"] = self.args.mm_projector_lr
                groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _save_checkpoint(self, model, trial):
        """--tune_mm_mlp_adapter: checkpoint-<step>/ gets config.json + mm_projector.bin only (not resumable)."""
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            from llava.train.train import save_projector

            output_dir = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if self.is_world_process_zero():
                save_projector(self.model, output_dir, getattr(self.args, "use_im_start_end", False))
            return
        super()._save_checkpoint(model, trial)

    def _save(self, output_dir=None, state_dict=None):
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            return
        super()._save(output_dir, state_dict)
