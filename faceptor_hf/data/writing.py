"""Writing a converted dataset so that it is self-contained (images embedded) and never half-written."""

from __future__ import annotations

import os
import shutil


def embed_images(dataset, num_proc: int | None = None):
    """Images referenced by path become bytes inside the table (as ``push_to_hub`` does), so the written dataset
    does not depend on the release folder."""
    from datasets.table import embed_table_storage

    return dataset.with_format("arrow").map(embed_table_storage, batched=True, num_proc=num_proc,
                                            desc="embedding images").with_format(None)


def save_prepared(dataset, output: str, file_format: str = "arrow", overwrite: bool = False,
                  num_proc: int | None = None, shard_size: int | None = None) -> str:
    """Write ``dataset`` (images embedded) to ``output``: ``arrow`` = a ``save_to_disk`` folder, ``parquet`` =
    ``data-XXXXX-of-YYYYY.parquet`` shards. ``shard_size``: rows per parquet file (the last one smaller), or at
    most that many per arrow file; None = parquet files of about 500 MB, arrow files as ``save_to_disk`` cuts
    them. Everything is written to ``<output>.partial`` first and renamed at the end, so an interrupted run leaves
    nothing that looks complete."""
    if file_format not in ("arrow", "parquet"):
        raise ValueError(f"format must be 'arrow' or 'parquet', got {file_format!r}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be at least 1 row, got {shard_size}")
    output = os.path.abspath(output)
    if os.path.exists(output):
        if not overwrite:
            raise FileExistsError(f"{output} exists; choose another --output or pass --overwrite")
    partial = output + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    embedded = embed_images(dataset, num_proc)
    count = max(1, -(-len(embedded) // shard_size)) if shard_size else None
    if file_format == "arrow":
        if count is not None and num_proc:
            num_proc = min(num_proc, count)  # save_to_disk needs at least one shard per process
        embedded.save_to_disk(partial, num_proc=num_proc, num_shards=count)
    else:
        os.makedirs(partial)
        if count is None:
            count = max(1, -(-embedded.data.nbytes // (500 << 20)))
            shards = (embedded.shard(num_shards=count, index=index, contiguous=True) for index in range(count))
        else:
            shards = (embedded.select(range(index * shard_size, min(len(embedded), (index + 1) * shard_size)))
                      for index in range(count))
        for index, shard in enumerate(shards):
            shard.to_parquet(os.path.join(partial, f"data-{index:05d}-of-{count:05d}.parquet"))
    if os.path.exists(output):
        shutil.rmtree(output)
    os.replace(partial, output)
    return output
