"""Where the models meet MD engines: the ASE calculator (:mod:`.ase`), the i-PI PES and
client (:mod:`.ipi`) and mdplugin's own MD driver (:mod:`.md`)."""
