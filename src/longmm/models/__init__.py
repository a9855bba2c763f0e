"""Models: generators, discriminators and other networks built from the shared blocks."""

from longmm.models.gan import DCGANDiscriminator, DCGANGenerator
from longmm.models.seq2seq import Seq2SeqTransformer

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "Seq2SeqTransformer"]
