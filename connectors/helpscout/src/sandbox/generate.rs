//! Generated conversations: several languages, threads (the customer's message, agents' replies and
//! private notes), tags, the "Category" and "Sentiment" dropdowns, the "Language" text field, and a
//! share already triaged by agents (their category, sentiment, language and `triaged` tag are the
//! ground truth for `eval`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    AGENT_IDS, CATEGORY_FIELD_ID, Conversation, LANGUAGE_FIELD_ID, MAILBOX_ID, SENTIMENT_FIELD_ID, SUMMARY_FIELD_ID,
    Thread,
};

/// The Category dropdown's options: (option id, label).
pub const CATEGORIES: [(u64, &str); 5] = [
    (9_101, "Billing"),
    (9_102, "Technical issue"),
    (9_103, "Shipping"),
    (9_104, "Account access"),
    (9_105, "Feedback"),
];

/// (language, [(subject, body)] per category in [`CATEGORIES`] order, an agent's reply, a private note).
type Language = (&'static str, [(&'static str, &'static str); 5], &'static str, &'static str);

const LANGUAGES: [Language; 4] = [
    (
        "en",
        [
            (
                "Charged twice for my plan",
                "<p>Hi, my card was charged twice for the March invoice. Could you refund one?</p>",
            ),
            (
                "Export keeps failing",
                "<p>The CSV export stops at 50% with an error.<br/>I am on the latest version.</p>",
            ),
            ("Order has not arrived", "<p>My order was due on Friday and tracking shows nothing since Monday.</p>"),
            ("Locked out of my account", "<p>The reset email never comes and I cannot sign in.</p>"),
            ("Love the new dashboard", "<p>Great work on the dashboard! A dark mode would be lovely.</p>"),
        ],
        "<p>Thanks for writing in, we are looking into it now.</p>",
        "Checked billing logs, looks like a gateway retry.",
    ),
    (
        "de",
        [
            ("Rechnung doppelt bezahlt", "<p>Guten Tag, die Rechnung wurde zweimal abgebucht. Bitte erstatten.</p>"),
            ("Synchronisierung bricht ab", "<p>Seit dem Update bricht die Synchronisierung mit Fehler 500 ab.</p>"),
            ("Lieferung fehlt", "<p>Meine Bestellung ist seit einer Woche unterwegs.</p>"),
            ("Kein Zugang zum Konto", "<p>Ich erhalte keinen Anmeldecode mehr.</p>"),
            ("Lob für den Support", "<p>Sehr schneller Support, vielen Dank!</p>"),
        ],
        "<p>Vielen Dank für Ihre Nachricht, wir kümmern uns darum.</p>",
        "Kunde hat schon angerufen.",
    ),
    (
        "fr",
        [
            ("Prélèvement en double", "<p>Bonjour, j'ai été débité deux fois ce mois-ci.</p>"),
            ("L'application plante", "<p>L'application se ferme dès que j'ouvre un rapport.</p>"),
            ("Colis abîmé", "<p>Mon colis est arrivé endommagé &amp; incomplet.</p>"),
            ("Mot de passe oublié", "<p>Je ne reçois pas le lien de réinitialisation.</p>"),
            ("Merci beaucoup", "<p>Service excellent, continuez ainsi.</p>"),
        ],
        "<p>Merci de nous avoir contactés, nous revenons vers vous.</p>",
        "Vérifier la commande dans l'ERP.",
    ),
    (
        "es",
        [
            ("Cobro duplicado", "<p>Hola, me cobraron dos veces la suscripción.</p>"),
            ("Error al exportar", "<p>Al exportar el informe el archivo queda vacío.</p>"),
            ("Pedido sin entregar", "<p>El pedido debía llegar el viernes.</p>"),
            ("Cuenta bloqueada", "<p>Mi cuenta se bloqueó tras varios intentos.</p>"),
            ("Sugerencia", "<p>Me encanta la aplicación, falta un modo sin conexión.</p>"),
        ],
        "<p>Gracias por escribirnos, lo estamos revisando.</p>",
        "Posible fraude, revisar con pagos.",
    ),
];

/// The Sentiment dropdown's options: (option id, label).
pub const SENTIMENTS: [(u64, &str); 3] = [(9_201, "positive"), (9_202, "neutral"), (9_203, "negative")];

/// The sentiment an agent gives a conversation of each category in [`CATEGORIES`] order (the
/// generated texts: a double charge, a failing export, a late parcel and a lock-out are complaints;
/// feedback is praise).
const SENTIMENT_BY_CATEGORY: [usize; 5] = [2, 2, 2, 1, 0];

const EXTRA_TAGS: [&str; 4] = ["vip", "web", "mobile", "newsletter"];

/// What [`conversations`] builds.
pub struct Generated {
    pub conversations: BTreeMap<u64, Conversation>,
    pub threads: BTreeMap<u64, Vec<Thread>>,
    pub next_conversation: u64,
    pub next_thread: u64,
}

/// The first conversation id (Help Scout's are large integers).
const FIRST_ID: u64 = 868_000_001;

/// `count` conversations created two minutes apart and ending just before `now`; about
/// `triaged_share` carry an agent's category, the `triaged` tag and a status other than active.
pub fn conversations(count: u64, seed: u64, now: i64, triaged_share: f64) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut conversations = BTreeMap::new();
    let mut threads = BTreeMap::new();
    let mut thread_id = 2_535_000_000u64;
    for n in 0..count {
        let id = FIRST_ID + n;
        let (language, texts, reply, note) = LANGUAGES[rng.random_range(0..LANGUAGES.len())];
        let category = rng.random_range(0..CATEGORIES.len());
        let (subject, body) = texts[category];
        let created = now - 120 * (count - n) as i64;
        let customer = 200_000 + n % 500;
        let triaged = rng.random_bool(triaged_share);
        let mut tags = vec![language.to_owned()];
        if rng.random_bool(0.3) {
            tags.push(EXTRA_TAGS[rng.random_range(0..EXTRA_TAGS.len())].to_owned());
        }
        let mut custom = BTreeMap::new();
        let mut status = "active";
        if triaged {
            custom.insert(CATEGORY_FIELD_ID, CATEGORIES[category].0.to_string());
            custom.insert(SENTIMENT_FIELD_ID, SENTIMENTS[SENTIMENT_BY_CATEGORY[category]].0.to_string());
            custom.insert(LANGUAGE_FIELD_ID, language.to_owned());
            tags.push("triaged".to_owned());
            status = ["active", "pending", "closed"][rng.random_range(0..3)];
        }
        let mut list = vec![Thread {
            id: thread_id,
            kind: "customer".into(),
            body: body.to_owned(),
            created_at: created,
            author: customer,
        }];
        thread_id += 1;
        let replies = if triaged { rng.random_range(1..=3) } else { rng.random_range(0..=1) };
        for r in 0..replies {
            let is_note = r % 2 == 1;
            list.push(Thread {
                id: thread_id,
                kind: if is_note { "note" } else { "message" }.into(),
                body: if is_note { note } else { reply }.to_owned(),
                created_at: created + 30 * (r as i64 + 1),
                author: AGENT_IDS[rng.random_range(0..AGENT_IDS.len())],
            });
            thread_id += 1;
        }
        let updated = list.last().map_or(created, |t| t.created_at);
        conversations.insert(
            id,
            Conversation {
                id,
                number: 190_000 + n,
                mailbox: MAILBOX_ID,
                subject: subject.to_owned(),
                status: status.to_owned(),
                created_at: created,
                user_updated_at: updated,
                modified_at: updated,
                customer,
                assignee: triaged.then_some(AGENT_IDS[0]),
                tags,
                custom,
            },
        );
        threads.insert(id, list);
    }
    Generated { conversations, threads, next_conversation: FIRST_ID + count, next_thread: thread_id }
}

/// A custom field: (id, name, type, options as (option id, label)).
pub type FieldDef = (u64, String, String, Vec<(u64, String)>);

/// Each mailbox's custom fields.
pub fn fields() -> Vec<FieldDef> {
    vec![
        (
            CATEGORY_FIELD_ID,
            "Category".into(),
            "DROPDOWN".into(),
            CATEGORIES.iter().map(|(id, l)| (*id, (*l).to_owned())).collect(),
        ),
        (SUMMARY_FIELD_ID, "Summary".into(), "SINGLE_LINE".into(), Vec::new()),
        (
            SENTIMENT_FIELD_ID,
            "Sentiment".into(),
            "DROPDOWN".into(),
            SENTIMENTS.iter().map(|(id, l)| (*id, (*l).to_owned())).collect(),
        ),
        (LANGUAGE_FIELD_ID, "Language".into(), "SINGLE_LINE".into(), Vec::new()),
    ]
}
