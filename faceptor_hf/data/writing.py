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
                  num_proc: int | None = None) -> str:
    """Write ``dataset`` (images embedded) to ``output``: ``arrow`` = a ``save_to_disk`` folder, ``parquet`` =
    ``data-XXXXX-of-YYYYY.parquet`` shards. Everything is written to ``<output>.partial`` first and renamed at the
    end, so an interrupted run leaves nothing that looks complete."""
    if file_format not in ("arrow", "parquet"):
        raise ValueError(f"format must be 'arrow' or 'parquet', got {file_format!r}")
    output = os.path.abspath(output)
    if os.path.exists(output):
        if not overwrite:
            raise FileExistsError(f"{output} exists; choose another --output or pass --overwrite")
    partial = output + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    embedded = embed_images(dataset, num_proc)
    if file_format == "arrow":
        embedded.save_to_disk(partial, num_proc=num_proc)
    else:
        os.makedirs(partial)
        shards = max(1, -(-embedded.data.nbytes // (500 << 20)))
        for index in range(shards):
            shard = embedded.shard(num_shards=shards, index=index, contiguous=True)
            shard.to_parquet(os.path.join(partial, f"data-{index:05d}-of-{shards:05d}.parquet"))
    if os.path.exists(output):
        shutil.rmtree(output)
    os.replace(partial, output)
    return output
