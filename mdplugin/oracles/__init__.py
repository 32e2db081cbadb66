"""Reference methods ("oracles") that label structures: tblite (GFN2-xTB), PySCF, any ASE calculator."""
