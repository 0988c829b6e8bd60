"""What retrspect adds to DaCHS in every process (see :mod:`dachs_hook`).

The pgvector column type and the nearest-spectrum ADQL functions attach
here, as does one interoperability fix to DaCHS's VOTable writer.
"""
from __future__ import annotations

def register_adql_functions() -> None:
    """Register retrspect's nearest-spectrum ADQL functions with DaCHS."""
    from retrspect.vo_services import similarity
    similarity.register_adql_functions()


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


def teach_vector_type() -> None:
    """Let DaCHS columns have pgvector's ``vector(n)`` type.

    DaCHS derives every other type system (VOTable, numpy, Python, XSD)
    from a column's SQL type; its converters hand a ``name(n)`` type to
    ``mapComplex(name, n)``.  For those, a ``vector(n)`` is what it holds,
    ``real[n]`` (a float array in VOTable and TAP_SCHEMA); only the check of
    the database's own type code must know it is a ``vector``.
    """
    from gavo.base import typesystems
    from gavo.utils import typeconversions

    def with_vector(cls, original):
        def map_complex(self, type_name, length):
            if type_name == "vector":
                if isinstance(self, typesystems.ToPgTypeValidatorConverter):
                    return cls.makeChecker("vector")
                type_name = "real"
            return original(self, type_name, length)
        map_complex.knows_vector = True
        return map_complex

    classes = [typeconversions.FromSQLConverter]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        original = cls.__dict__.get("mapComplex")
        if original is not None and not getattr(original, "knows_vector",
                                                False):
            cls.mapComplex = with_vector(cls, original)


def read_vectors_as_arrays() -> None:
    """Make psycopg2 return pgvector values as numpy float32 arrays.

    Without a typecaster psycopg2 hands vectors over as text ('[1,2,3]'),
    which DaCHS cannot serialise as a float array.  The caster is
    registered when DaCHS first sets up its database connections.  Values
    are written as plain Python lists, which PostgreSQL casts to vector on
    assignment, so no (global) adapter is needed.
    """
    from gavo.base import sqlsupport

    def register(conn) -> None:
        import psycopg2.extensions
        from pgvector import Vector

        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regtype('vector')::oid")
            (oid,) = cursor.fetchone()
        if oid is None:
            return  # no pgvector in this database: nothing to read

        def cast(value, cursor):
            return None if value is None else Vector.from_text(value).to_numpy()

        psycopg2.extensions.register_type(
            psycopg2.extensions.new_type((oid,), "VECTOR", cast))

    sqlsupport.onDBInit(register)


def write_arrays_in_json() -> None:
    """DaCHS's JSON output (``RESPONSEFORMAT=json`` in TAP and the api
    renderer) serialises with the standard ``json`` module, which knows no
    numpy arrays, so any query selecting a latent vector failed ("Object of
    type ndarray is not JSON serializable"), and writes NaN, which is not
    JSON.  Arrays become lists, NaN values and elements null."""
    import codecs
    import json

    import numpy as np
    from gavo.formats import common, jsontable

    def plain(value):
        if isinstance(value, np.ndarray):
            return [None if isinstance(v, float) and v != v else v
                    for v in value.tolist()]
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    def writeTableAsJSON(table, target, acquireSamples=False):
        payload = jsontable._getJSONStructure(table, acquireSamples)
        payload["data"] = [[None if isinstance(v, float) and v != v else v for v in row]
                           for row in payload["data"]]
        return json.dump(payload, codecs.getwriter("utf-8")(target), default=plain)

    jsontable.writeTableAsJSON = writeTableAsJSON
    common.registerDataWriter("json", writeTableAsJSON, "application/json", "JSON", ".json")
