"""Packaging for tfrec_onerec.

Runtime dependencies are pinned in requirements/lock.txt (the whole stack, resolved with the
overrides in requirements/overrides.txt); `make install` installs that lock and then this
package with --no-deps. The ranges below are what the code needs, for pip users who bring
their own stack.
"""
from setuptools import find_packages, setup

setup(
    name="tfrec_onerec",
    version="0.1.0",
    description="A TensorFlow / Keras 3 model zoo of the OneRec family of recommenders.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tfrec_onerec", "tfrec_onerec.*", "tfx_pipelines", "tfx_pipelines.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "numpy>=2.1,<3",
        "pandas>=2,<3",
        "tqdm",
    ],
    extras_require={
        "ranking": ["tf-keras==2.21.*", "tensorflow-ranking==0.5.5", "tensorflow-recommenders==0.7.7"],
        "serving": ["tensorflow-serving-api==2.21.0"],
        "tfx": ["tfx==1.21.0"],
    },
    entry_points={"console_scripts": ["tfrec-onerec=tfrec_onerec.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
