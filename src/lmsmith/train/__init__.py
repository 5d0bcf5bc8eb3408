"""The training engine: `lmsmith train`.

    config.py       the recipe (data, out, model, train) and the batch plan
    data.py         random windows from memory-mapped token shards, a pure function of (seed, step)
    optim.py        AdamW and Muon, and which parameters each trains
    schedule.py     warmup + cosine, warmup-stable-decay, constant; a floor learning rate
    precision.py    bf16 / fp16 (with a gradient scaler) / fp32 autocast
    guard.py        skip steps with a non-finite loss or gradient; stop when they keep coming
    memory.py       will it fit: weights, gradients, optimizer state, activations
    flops.py        MFU against the device's measured matmul peak
    checkpoint.py   safetensors + JSON checkpoints, atomic, resumable to the bit
    metrics.py      metrics.jsonl, TensorBoard, Weights & Biases
    progress.py     the progress bar
    distributed.py  joining the ranks torchrun started
    parallel.py     activation checkpointing, compile, DDP and FSDP2, applied from outside the model
    trainer.py      the Trainer: one step, evaluation, checkpoints, and the loop over them
    loop.py         `lmsmith train`: a recipe's model and data, run by the Trainer
"""
