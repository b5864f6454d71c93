"""CSV (and other delimited text) through pyarrow's reader: the dialect sniffed, ragged
rows and headers of numbers named."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.errors import InvalidDataError
from service.formats.columns import _is_number, _no_rows, _table_arrays
from service.formats.libs import pa, pyarrow
from service.formats.limits import Arrays, Bounds, ReadNotes

# -- tables: CSV and Parquet ------------------------------------------------------------

# The cells of a CSV read as missing (API.md: empty cells, NA, NaN).
NULL_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


def _read_csv(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
    if _blank(path):
        raise _no_rows()
    dialect = sniff(path)
    ragged: list[pyarrow.csv.InvalidRow] = []

    def on_invalid_row(row: pyarrow.csv.InvalidRow) -> str:
        ragged.append(row)
        return "error"

    def read(use_threads: bool, column_names: list[str] | None) -> pa.Table:
        return pyarrow.csv.read_csv(
            path,
            read_options=pyarrow.csv.ReadOptions(
                use_threads=use_threads, column_names=column_names
            ),
            parse_options=pyarrow.csv.ParseOptions(
                delimiter=dialect.delimiter, invalid_row_handler=on_invalid_row
            ),
            convert_options=pyarrow.csv.ConvertOptions(
                null_values=list(NULL_VALUES),
                strings_can_be_null=True,
                decimal_point=dialect.decimal_point,
            ),
        )

    def read_all(column_names: list[str] | None = None) -> pa.Table:
        try:
            try:
                return read(True, column_names)
            except pa.ArrowInvalid:
                if not ragged or ragged[0].number is not None:
                    raise
                # Threaded reading does not know row numbers: read again, in order, to name it.
                ragged.clear()
                return read(False, column_names)
        except pa.ArrowInvalid as exc:
            if ragged:
                raise _ragged(ragged[0], dialect) from None
            raise InvalidDataError(f"the CSV cannot be read: {exc}") from None

    table = read_all()
    line_offset = 2
    header = _numeric_header(table)
    if header is not None:
        # A file without a header: its first line is data, not names (pyarrow would have
        # taken it as names, and the first sample would be lost).
        names = [f"x{j}" for j in range(table.num_columns)]
        table = read_all(names)
        line_offset = 1
        notes.warnings.append(
            f"the CSV's first line ({header}) holds only numbers: it was read as the first "
            f"row of data, not as a header, and the columns are named x0 to x{len(names) - 1}"
            " (send a header line to name them)"
        )
    X, y, features = _table_arrays(
        table, label_column, bounds, line_offset=line_offset, notes=notes
    )
    notes.feature_names = None if header is not None else features
    return X, y


@dataclass(frozen=True)
class Dialect:
    """How a CSV writes its fields and its numbers."""

    delimiter: str = ","
    decimal_point: str = "."

    def describe(self) -> str:
        names = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}
        text = f"fields separated by {names[self.delimiter]}"
        return text + (", decimal commas" if self.decimal_point == "," else "")


DELIMITERS = (",", ";", "\t", "|")
# Lines looked at to choose the delimiter: the header and a few rows.
_SNIFF_LINES = 20
_DECIMAL_COMMA = re.compile(r"\d,\d")


def sniff(path: Path) -> Dialect:
    """The delimiter (``,`` ``;`` tab or ``|``) and decimal point of a CSV, from its first
    lines.

    The delimiter is the one that splits the header and every sampled row into the same
    number of fields, the most fields first (a comma by default, and where none agrees);
    quoted text is left out of the count. With ``;`` between the fields, numbers written
    with a decimal comma (``1,5``) are read as such, as spreadsheets in much of Europe
    write them.
    """
    with path.open("rb") as handle:
        head = handle.read(65_536)
    lines = [
        re.sub(r'"[^"]*"', "", line)
        for line in head.decode("utf-8", errors="replace").splitlines()[:_SNIFF_LINES]
        if line.strip()
    ]
    if len(head) == 65_536 and len(lines) > 1:
        lines.pop()  # cut short by the read
    best, most = ",", 0
    for delimiter in DELIMITERS:
        counts = {line.count(delimiter) for line in lines}
        if len(counts) == 1 and (found := counts.pop()) > most:
            best, most = delimiter, found
    decimal_comma = best == ";" and any(_DECIMAL_COMMA.search(line) for line in lines[1:])
    return Dialect(best, "," if decimal_comma else ".")


def _numeric_header(table: pa.Table) -> str | None:
    """The first line of a CSV, shortened, when it is numbers rather than column names.

    ``0,1,...,n-1`` is a header: pandas writes it for a DataFrame made from an array.
    """
    try:
        names = [name.strip() for name in table.column_names]
    except UnicodeDecodeError:
        return None
    if not names or not all(_is_number(name) for name in names):
        return None
    if names == [str(j) for j in range(len(names))]:
        return None
    line = ",".join(names)
    return repr(line if len(line) <= 40 else line[:37] + "...")


def _blank(path: Path) -> bool:
    """Whether a file holds nothing but white space (read no further than 64 KiB)."""
    with path.open("rb") as handle:
        head = handle.read(65_536)
    return len(head) < 65_536 and not head.strip()


def _ragged(row: pyarrow.csv.InvalidRow, dialect: Dialect) -> InvalidDataError:
    found, expected = row.actual_columns, row.expected_columns
    if row.number is None:
        where, loc = "a row", ["row"]
    else:
        # pyarrow counts records from 1, the header being the first.
        index = row.number - 2
        where, loc = f"row {index} (line {row.number})", ["row", index]
    return InvalidDataError(
        f"the CSV is ragged: {where} has {found} fields, the header has {expected} "
        f"(read with {dialect.describe()}; the delimiters ',', ';', tab and '|' are "
        "detected when the header and the first rows agree on one)",
        errors=[{"loc": loc, "msg": f"{found} fields, expected {expected}"}],
    )
