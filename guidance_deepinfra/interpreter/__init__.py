"""The guidance interpreter for DeepInfra's chat API: the base chat interpreter (`base`), client-side stops
(`stops`), what a grammar asks of each request (`grammar_attrs`) and token log probabilities (`logprobs`).
The interpreter class a model runs is composed from it and the constraint mixins in `model`."""
