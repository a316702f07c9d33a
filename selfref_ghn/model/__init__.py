"""What an SR-GHN is (DESIGN §2): graphs of parameter pytrees (:mod:`.graph`), the GNN and its
heads (:mod:`.srghn`), self-mutation (:mod:`.mutation`) and the policies it generates
(:mod:`.policy`)."""
