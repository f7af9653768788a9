"""SAEs: local training with SAELens (train), loading (sources), feature catalogue and PISCES
row scores (catalogue), storing a catalogue (index), CLI pieces (cli)."""
