"""The offline-mix corpus builder (recipes.prepare, tools/make_bundled_data.py): fetch the public corpora, extract documents, build the generic mix and the domains, report."""
