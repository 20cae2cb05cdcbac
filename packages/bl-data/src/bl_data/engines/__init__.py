"""Engines of `prepare` other than the local one (`bl_data.pipeline.prepare`); each imported only when used."""
