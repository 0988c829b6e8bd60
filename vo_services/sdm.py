"""Per-spectrum details of the SDM VOTables DaCHS serves through datalink.

DaCHS's ``//ssap#sdm-instance`` takes the flux column's unit from the SSA
table's mixin parameters, one unit for the whole table.  retrspect's
collections differ (relative fluxes, erg/s/cm2/A, 1e-17 erg/s/cm2/A), so the
unit of each served spectrum is set from its own ``ssa_fluxunit``.
"""
from __future__ import annotations

FLUX_COLUMNS = ("flux", "flux_error")


def set_flux_unit(table, unit: str) -> None:
    """Give the flux columns of one SDM instance table the spectrum's unit.

    The table's definition is shared between requests, so a changed copy
    replaces it on this table only.
    """
    table_def = table.tableDef
    columns = [column.change(unit=unit) if column.name in FLUX_COLUMNS
               else column for column in table_def.columns]
    table.tableDef = table_def.change(columns=columns)
