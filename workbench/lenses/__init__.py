"""Weight and activation lenses that need no SAE: vocab projection of value vectors, neuron
pre-activation statistics, difference-of-means concept vectors."""
