"""Small sentiment prompt and word lists (written for the package): the contrast pairs of
a sentiment steering vector and the words whose probabilities score its effect."""

from __future__ import annotations

__all__ = ["STEER_POSITIVE", "STEER_NEGATIVE", "STEER_GOOD", "STEER_BAD"]

STEER_POSITIVE = [
    "I love this. It is wonderful",
    "What a great, happy day",
    "This film was excellent and delightful",
    "I am so glad and thankful",
    "The food was delicious and amazing",
]
STEER_NEGATIVE = [
    "I hate this. It is awful",
    "What a terrible, sad day",
    "This film was dreadful and boring",
    "I am so angry and upset",
    "The food was disgusting and horrible",
]
STEER_GOOD = [" great", " good", " amazing", " wonderful", " fantastic", " excellent"]
STEER_BAD = [" terrible", " bad", " awful", " horrible", " boring", " disappointing"]
