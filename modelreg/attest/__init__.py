"""The signing wire formats, shared by :mod:`modelreg.sign` and :mod:`modelreg.verify`.

One module per format; each parses strictly, serialises byte-for-byte the
same way every time, and knows nothing of policies or of who signs:

* :mod:`~modelreg.attest.keys`: ECDSA key files (encrypted PKCS#8 and
  SubjectPublicKeyInfo PEM), the passphrase variables, fingerprints and the
  public-key hint ``model_signing`` checks.
* :mod:`~modelreg.attest.dsse`: DSSE envelopes: PAE, parse, serialise, and the
  one-signature sign/verify over PAE with an EC key.
* :mod:`~modelreg.attest.intoto`: in-toto Statement v1 and cosign's
  signature statement (``https://sigstore.dev/cosign/sign/v1``).
* :mod:`~modelreg.attest.model_transparency`: the model-transparency v1.0
  statement (``model_signing``'s), derived from a manifest's file layers.
* :mod:`~modelreg.attest.bundle`: sigstore bundles v0.1-v0.3: build a
  key-based one, parse any of them (size-capped before reading).
* :mod:`~modelreg.attest.storage`: bundles as OCI referrers in cosign v3's
  layout (write, list, order, fetch in parallel) and legacy cosign
  ``.sig``/``.att`` tags (read only).

On top of these, :mod:`modelreg.sign` decides *what* to sign and *how*: the
statements for a manifest (``sign``, ``attest``), the signers (a key, or
keyless through sigstore-python: OIDC token, Fulcio, Rekor), and the
predicates it builds (SLSA provenance, training lineage, model scan).
:mod:`modelreg.verify` decides *whether* to trust: policies and authorities,
keyless verification through sigstore-python's ``Verifier``, the bounded
referrer walk, the N-of-M matching, and directory verification.

Dependency rule: ``attest`` imports neither ``sign`` nor ``verify`` (it sits
beside ``content`` and ``model`` below both); ``sign`` and ``verify`` import
``attest`` and never each other's private modules. A format change happens
here once, so what ``sign`` writes and what ``verify`` reads cannot drift
apart; the golden files in ``testdata/golden/sign`` hold them to the bytes.

The package itself exports nothing: import the module of the format you need.
"""
