"""The example specs (installed as the package `vtax_examples`); `vtax files DIR` writes them out."""
