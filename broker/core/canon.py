"""Canonicalization shared by the signer and the verifier.

The lienthong profile signs the whole document (``Reference URI=""``) with
the enveloped-signature transform.  Per XMLDSig 4.4.3.3 the node-set of
``URI=""`` excludes comments, and the enveloped transform removes the
``Signature`` element with its descendants (but not the text after it).
We implement that directly on the parsed tree, in one C14N pass, instead
of re-parsing the document as general-purpose libraries do.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from broker.core.algorithms import C14N


def canonicalize(node: etree._Element | etree._ElementTree, method: C14N,
                 inclusive_prefixes: Sequence[str] | None = None) -> bytes:
    """Canonical bytes of ``node`` (an element keeps its inherited namespaces)."""
    return bytes(etree.tostring(
        node,
        method="c14n",
        exclusive=method.exclusive,
        with_comments=method.with_comments,
        inclusive_ns_prefixes=list(inclusive_prefixes) if (method.exclusive and inclusive_prefixes) else None,
    ))


def enveloped_octets(tree: etree._ElementTree, signature: etree._Element, method: C14N,
                     inclusive_prefixes: Sequence[str] | None = None) -> bytes:
    """Canonical bytes of the whole document without ``signature`` and without comments.

    The signature element is detached for the duration of the call and put
    back exactly where it was, so the tree is unchanged afterwards.
    """
    parent = signature.getparent()
    if parent is None:
        raise ValueError("an enveloped signature cannot be the root element")
    index = parent.index(signature)
    tail = signature.tail
    previous = signature.getprevious()
    # lxml removes an element's tail text with it; the enveloped transform
    # must keep that text, so hand it to the previous node while detached.
    saved = previous.tail if previous is not None else parent.text
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(signature)
    try:
        no_comments = C14N(method.uri, method.exclusive, False)
        return canonicalize(tree, no_comments, inclusive_prefixes)
    finally:
        if previous is not None:
            previous.tail = saved
        else:
            parent.text = saved
        parent.insert(index, signature)
        signature.tail = tail
