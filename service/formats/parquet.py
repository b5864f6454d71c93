"""Parquet through pyarrow: each column's type checked before its values are read."""

from __future__ import annotations

from pathlib import Path

from service.errors import InvalidDataError, PayloadTooLargeError
from service.formats.columns import (
    _check_label_column,
    _check_parquet_column,
    _column_names,
    _is_number_type,
    _table_arrays,
)
from service.formats.libs import pa, pyarrow
from service.formats.limits import Arrays, Bounds, ReadNotes, _size, check_cells, check_stored_bytes


def _read_parquet(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
    try:
        # Only the footer is read here: the schema and the sizes it declares.
        with pyarrow.parquet.ParquetFile(path) as footer:
            metadata, schema = footer.metadata, footer.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet file: {exc}") from None
    names = _column_names(schema, "Parquet file")
    _check_label_column(names, label_column)
    features = [n for n in names if n != label_column]
    if not features:
        raise InvalidDataError("the table has no feature columns besides the labels")
    for j, field in enumerate(schema):
        _check_parquet_column(field, j, is_label=field.name == label_column)
    n_samples = metadata.num_rows
    check_cells((n_samples, len(features)), bounds.max_cells)
    all_float32 = all(schema.field(n).type == pa.float32() for n in features)
    label_type = None if label_column is None else schema.field(label_column).type
    string_labels = label_type is not None and not _is_number_type(label_type)
    shape, itemsize = (n_samples, len(features)), 4 if all_float32 else 8
    numeric_labels = 8 * n_samples if label_column is not None and not string_labels else 0
    check_stored_bytes(shape, itemsize, numeric_labels, bounds.max_dataset_bytes)
    bounds.check_expansion(shape, itemsize, numeric_labels)
    # What the file says its pages hold once decompressed (decoding cannot take less).
    # Pages carry headers, levels and dictionaries beside the values: twice the stored
    # bound leaves room for those and still bounds what decompressing may allocate.
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > 2 * bounds.max_dataset_bytes:
        raise PayloadTooLargeError(
            f"the Parquet file declares {_size(declared)} of uncompressed data, more than "
            f"twice the {_size(bounds.max_dataset_bytes)} a dataset may take "
            "(CLUSTERBENCH_MAX_DATASET_BYTES)"
        )
    try:
        # String labels are read as a dictionary: each distinct label decoded once.
        with pyarrow.parquet.ParquetFile(
            path, read_dictionary=[label_column] if string_labels else None
        ) as parquet:
            table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet file: {exc}") from None
    if table.num_rows != n_samples:
        raise InvalidDataError(
            f"the Parquet file declares {n_samples:,} rows but holds {table.num_rows:,}"
        )
    X, y, features = _table_arrays(table, label_column, bounds, line_offset=None, notes=notes)
    notes.feature_names = features
    return X, y
