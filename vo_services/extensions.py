"""What retrspect adds to DaCHS in every process (see :mod:`dachs_hook`).

The pgvector column type and the nearest-spectrum ADQL functions attach
here, as does one interoperability fix to DaCHS's VOTable writer.
"""
from __future__ import annotations

#: ADQL user functions registered by this module (names as in ADQL)
REGISTERED_FUNCTIONS: list[str] = []


def register_adql_functions() -> None:
    """Register retrspect's ADQL user functions with DaCHS (none yet)."""
    # imported here: DaCHS is only importable inside the DaCHS venv
    from gavo.adql import ufunctions  # noqa: F401


def write_null_float_arrays_as_nan() -> None:
    """Serialise a NULL fixed-length float array as NaNs in TABLEDATA.

    DaCHS 2.7 writes a NULL array as an empty cell.  For fixed-length
    arrays (``arraysize="2"``, as SSAP's ``ssa_location`` and
    ``ssa_targetpos`` are) STILTS votlint rejects that ("Bad double string
    ''") and astropy warns (E02) when it parses it, which makes pyvo's SSAP
    queries over spectra without a position (MILES, MaNGA spaxels) fail
    under strict warning settings.  VOTable's null for a fixed-length float
    array is all elements NaN, which both accept.
    """
    from gavo.votable import common, enc_tabledata

    original = enc_tabledata._getArrayEncoderLines

    def array_encoder_lines(field):
        if field.hasVarLength() or field.datatype not in ("float", "double"):
            return original(field)
        nan_cell = " ".join(["NaN"] * field.getLength())
        return (["if val is None:", f"  tokens.append({nan_cell!r})", "else:"]
                + common.indentList(
                    enc_tabledata._getArrayEncoderLinesNotNULL(field), " "))

    enc_tabledata._getArrayEncoderLines = array_encoder_lines
