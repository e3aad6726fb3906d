"""Radiology reports with planted identifiers, the corpus the de-identification rules are measured on.

Each entry is (report, identifiers planted in it, clinical phrases that must survive). The reports
follow the shapes of hospital exports: headers with record and accession numbers, dates and
times in several styles, callback sentences with names and phone numbers, signature blocks,
addresses and institution names.

Not covered by the rules, and so not planted: a bare name with nothing beside it (no title, role,
degree or signature line), e.g. "told John at the desk".
"""

from __future__ import annotations

CORPUS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "EXAMINATION: CHEST (PA AND LAT)\nMRN: 00482913  Accession #: A2019-55813\nDate of exam: 03/14/2019 08:42\n"
        "FINDINGS: Small right pleural effusion. No pneumothorax.\nIMPRESSION: Small right effusion.\n"
        "Electronically signed by: Sarah K. Whitfield, MD on 03/14/2019 at 9:15 AM",
        ("00482913", "A2019-55813", "03/14/2019", "08:42", "Sarah", "Whitfield", "9:15 AM"),
        ("Small right pleural effusion", "No pneumothorax"),
    ),
    (
        "Findings were discussed with Dr. Emily Navarro by telephone at 14:05 on 2021-07-02, "
        "who acknowledged them. Callback number (617) 555-0142 ext 31.\nThere is a 1.8 cm nodule in the left upper lobe.",
        ("Emily", "Navarro", "14:05", "2021-07-02", "555-0142"),
        ("1.8 cm nodule in the left upper lobe",),
    ),
    (
        "Patient: JOHNSON, Robert A.\nMedical record number 7719-2044-1\nSt. Mary's Hospital, 1200 Cedar Grove Avenue, "
        "Springfield, IL 62704\nCOMPARISON: Chest radiograph of January 5, 2018.\nFINDINGS: Heart size is enlarged. Lungs are clear.",
        ("JOHNSON", "Robert", "7719-2044-1", "St. Mary's", "1200 Cedar Grove", "62704", "January 5, 2018"),
        ("Heart size is enlarged", "Lungs are clear"),
    ),
    (
        "Referring physician: Kwame Mensah\nOrder no. 55120931\nAP portable view at 6:30 pm. Endotracheal tube 4 cm above the carina. "
        "Moderate left pleural effusion with adjacent atelectasis.\nDictated by: Li Wei\nTranscribed by: M. O'Connor",
        ("Kwame", "Mensah", "55120931", "6:30 pm", "Li Wei", "O'Connor"),
        ("Endotracheal tube 4 cm above the carina", "Moderate left pleural effusion with adjacent atelectasis"),
    ),
    (
        "Accession: RAD-884201. Study date 12 Feb 2020. Compared with 2019-11-30.\nLarge right pneumothorax with "
        "mediastinal shift. Critical result called to Dr Patel at 23:10 hrs, pager 4471.\n"
        "Massachusetts General Hospital Department of Radiology",
        ("RAD-884201", "12 Feb 2020", "2019-11-30", "Patel", "23:10", "4471", "Massachusetts General"),
        ("Large right pneumothorax with mediastinal shift",),
    ),
    (
        "HISTORY: 93 year old woman with cough.\nFINDINGS: Patchy consolidation in the right lower lobe. No effusion.\n"
        "Read by: Hannah Osei-Bonsu, MBBS FRCR\nContact radiology@northvalleyclinic.org or 020 7946 0958.",
        ("93 year old", "Hannah", "Osei-Bonsu", "radiology@northvalleyclinic.org", "7946 0958"),
        ("Patchy consolidation in the right lower lobe", "No effusion"),
    ),
    (
        "Patient ID: PT99120488, Encounter 30012877.\nPA and lateral views of the chest dated 20230418.\n"
        "Cardiomediastinal silhouette within normal limits. Possible small nodule at the right lung base.\n"
        "Attending: Maria Gonzalez-Ruiz\nVerified by Prof. Alan Turing-Smythe",
        ("PT99120488", "30012877", "20230418", "Maria", "Gonzalez-Ruiz", "Alan", "Turing-Smythe"),
        ("Possible small nodule at the right lung base", "Cardiomediastinal silhouette within normal limits"),
    ),
    (
        "Lakeside Regional Medical Center, 45 Harbor View Road, Portland, OR 97201, tel 503-555-0198\n"
        "Exam: CXR 1 view. Time: 07.45.\nStable cardiomegaly. Bilateral small effusions, slightly increased since Oct 3, 2022.\n"
        "cc: Mr. Daniel Fitzgerald",
        ("Lakeside Regional", "45 Harbor View", "97201", "503-555-0198", "07.45", "Oct 3, 2022", "Daniel", "Fitzgerald"),
        ("Stable cardiomegaly", "Bilateral small effusions, slightly increased since"),
    ),
    (
        "SSN 123-45-6789 on requisition. Name: Chen, Mei-Ling\nDOB 4/9/1950.\nSegmental atelectasis in the left lower lobe. "
        "No pneumothorax or pleural effusion.\nReported by: Tomasz Kowalski, MD, PhD",
        ("123-45-6789", "Chen", "Mei-Ling", "4/9/1950", "Tomasz", "Kowalski"),
        ("Segmental atelectasis in the left lower lobe", "No pneumothorax or pleural effusion"),
    ),
    (
        "University of Riverside Hospital\nFindings communicated to Nurse Joanna Pike at 10 am on 5th of March 2021.\n"
        "Interval development of a moderate left pneumothorax, about 2 cm at the apex. Chest tube recommended.",
        ("University of Riverside", "Joanna", "Pike", "10 am", "5th of March 2021"),
        ("moderate left pneumothorax, about 2 cm at the apex", "Chest tube recommended"),
    ),
    (
        "Acc no: 2020CR004471  MRN 5521983\nTechnologist: Ana Lucia Ferreira, RT(R)\nSingle AP view. Lines and tubes "
        "unchanged. Mild pulmonary edema. Retrocardiac opacity may represent atelectasis.",
        ("2020CR004471", "5521983", "Ana Lucia", "Ferreira"),
        ("Mild pulmonary edema", "Retrocardiac opacity may represent atelectasis"),
    ),
    (
        "Comparison: outside films from Sunnybrook Health Sciences Centre dated 11.06.2017.\n"
        "Solitary 9 mm nodule in the right middle lobe, unchanged over 5 years, benign.\nSigned: Dr. Olumide Adeyemi",
        ("Sunnybrook", "11.06.2017", "Olumide", "Adeyemi"),
        ("Solitary 9 mm nodule in the right middle lobe, unchanged over 5 years, benign",),
    ),
)


def planted() -> int:
    return sum(len(identifiers) for _, identifiers, _ in CORPUS)


def found(scrubber) -> int:
    """Planted identifiers still present, case-insensitively, in the corpus as ``scrubber`` leaves it."""
    return sum(
        identifier.casefold() in scrubber(report).casefold()
        for report, identifiers, _ in CORPUS
        for identifier in identifiers
    )
