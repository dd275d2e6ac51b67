"""Small real inputs that the tests and the benchmarks build; never used by a stage.

Test helpers, named so (as numpy.testing and torch.testing are): a fake COCO root
(coco.py, its one writer), scikit-image photographs (photos.py), tiny and random-weight
encoders (encoders.py) and a random-weight InceptionV3 (inception.py). They live in the
package rather than in tests/ because the benchmarks use them too and must not import tests/
(tests/test_code_layout.py checks both rules: no benchmark imports tests/, and no stage or
other library module imports pipeline.testing, so none is ever a stage's code dep).
"""
