"""The built-in phantom collection: procedural PA chest radiographs, reports and lesion masks.

Modules, in the order a patient passes through them:

- ``study``: what a patient is made of (anatomy, acquisitions, studies, lesions) and its random streams;
- ``sampling``: a patient drawn from ``(seed, patient index)`` alone;
- ``geometry``: the pixel grid in anatomical coordinates and where the lungs, heart and diaphragm lie;
- ``anatomy``: the normal chest drawn as attenuation;
- ``lesions``: each finding drawn into a study, with its mask;
- ``rendering``: one study to pixels (detector blur, noise, the site's characteristic curve);
- ``reports``: the radiology report of a study and the CheXpert labels a labeler derives from it;
- ``layout``, ``writer``: the collection's files on disk, written like a hospital export;
- ``collection``: the collection read back as source records (the ``phantom`` ingest adapter);
- ``summary``: counts per finding and site, and a sample grid.
"""
