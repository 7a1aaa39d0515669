//! Generated tickets: several languages, a conversation per ticket (the requester's message, agents'
//! public replies and private notes), tags, the "Category" dropdown, and a share already triaged by
//! agents (their category, priority, type and `triaged` tag are the ground truth for `eval`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::{CATEGORY_FIELD_ID, Comment, LANGUAGE_FIELD_ID, Role, SENTIMENT_FIELD_ID, Ticket, User};

/// The Category dropdown's options: (name, tag value).
pub const CATEGORIES: [(&str, &str); 5] = [
    ("Billing", "billing"),
    ("Technical issue", "technical_issue"),
    ("Shipping", "shipping"),
    ("Account access", "account_access"),
    ("Feedback", "feedback"),
];

/// (language, [(subject, body)] per category in [`CATEGORIES`] order, an agent's reply, a private note).
type Language = (&'static str, [(&'static str, &'static str); 5], &'static str, &'static str);

const LANGUAGES: [Language; 4] = [
    (
        "en",
        [
            (
                "I was charged twice this month",
                "Hello, my card shows two charges for the same invoice. Please refund one of them.",
            ),
            (
                "The app crashes when I upload a file",
                "Every time I upload a PDF larger than 5 MB the app closes. I use version 4.2 on Windows.",
            ),
            ("Where is my parcel?", "I ordered on Monday and the tracking number has not moved for four days."),
            ("I cannot log in anymore", "The password reset email never arrives and I am locked out of my account."),
            ("Great service, one suggestion", "Your team was very helpful. It would be nice to export reports as CSV."),
        ],
        "Thanks for reaching out, we are looking into it and will get back to you shortly.",
        "Checked the logs, escalating to tier 2.",
    ),
    (
        "de",
        [
            (
                "Doppelte Abbuchung",
                "Guten Tag, mir wurde die Rechnung zweimal abgebucht. Bitte erstatten Sie einen Betrag.",
            ),
            (
                "Die App stürzt beim Hochladen ab",
                "Beim Hochladen einer Datei schließt sich die App sofort. Version 4.2, macOS.",
            ),
            (
                "Paket nicht angekommen",
                "Meine Bestellung ist seit einer Woche unterwegs, die Sendungsverfolgung zeigt nichts Neues.",
            ),
            (
                "Kein Zugriff auf mein Konto",
                "Ich bekomme keinen Code zur Anmeldung und komme nicht mehr in mein Konto.",
            ),
            ("Lob und ein Wunsch", "Sehr freundlicher Support! Ein dunkles Design wäre schön."),
        ],
        "Vielen Dank für Ihre Nachricht, wir kümmern uns darum.",
        "Kunde hat bereits zweimal angerufen.",
    ),
    (
        "fr",
        [
            (
                "Facture payée deux fois",
                "Bonjour, j'ai été débité deux fois pour la même facture. Merci de me rembourser.",
            ),
            (
                "Erreur lors de la synchronisation",
                "La synchronisation échoue avec le code 500 depuis la mise à jour d'hier.",
            ),
            ("Colis endommagé", "Mon colis est arrivé abîmé et un article manque."),
            ("Mot de passe oublié", "Je ne reçois pas le lien de réinitialisation du mot de passe."),
            ("Merci pour votre aide", "Le service est excellent, continuez ainsi."),
        ],
        "Merci de nous avoir contactés, nous revenons vers vous rapidement.",
        "Vérifier la commande dans l'ERP.",
    ),
    (
        "es",
        [
            ("Cobro duplicado en mi tarjeta", "Hola, me cobraron dos veces la suscripción de este mes."),
            ("No funciona la exportación", "Al exportar el informe aparece un error y el archivo queda vacío."),
            ("Mi pedido no ha llegado", "El pedido debía llegar el viernes y todavía no tengo noticias."),
            ("Cuenta bloqueada", "Mi cuenta se bloqueó después de varios intentos de inicio de sesión."),
            ("Sugerencia para la aplicación", "Me encanta la aplicación, pero sería útil tener un modo sin conexión."),
        ],
        "Gracias por escribirnos, lo estamos revisando.",
        "Posible fraude, revisar con el equipo de pagos.",
    ),
];

const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const TYPES: [&str; 4] = ["question", "incident", "problem", "task"];
const EXTRA_TAGS: [&str; 5] = ["vip", "web", "email", "mobile", "newsletter"];

/// The organisations requesters belong to: (id, name).
pub const ORGANIZATIONS: [(u64, &str); 7] = [
    (363_000_000_000, "Acme Retail GmbH"),
    (363_000_000_001, "Bistro Lumière SARL"),
    (363_000_000_002, "Northwind Traders Ltd"),
    (363_000_000_003, "Café Andaluz S.L."),
    (363_000_000_004, "Globex Logistics Inc"),
    (363_000_000_005, "Initech Software"),
    (363_000_000_006, "Umbrella Health"),
];

/// The ids of the generated agents (the API user is the first).
pub const AGENT_IDS: [u64; 3] = [361_000_000_001, 361_000_000_002, 361_000_000_003];

/// What [`tickets`] builds: tickets, their conversations and the users behind them.
pub struct Generated {
    pub tickets: BTreeMap<u64, Ticket>,
    pub comments: BTreeMap<u64, Vec<Comment>>,
    pub users: BTreeMap<u64, User>,
    pub next_comment_id: u64,
}

/// The subject and first message of the `n`th sample ticket (languages and categories in turn), for
/// tickets arriving while a demo runs.
pub fn sample(n: u64) -> (&'static str, &'static str) {
    let (_, texts, _, _) = LANGUAGES[(n % LANGUAGES.len() as u64) as usize];
    texts[((n / LANGUAGES.len() as u64) % CATEGORIES.len() as u64) as usize]
}

/// The sentiment an agent records for a ticket of category `category` (an index into
/// [`CATEGORIES`]): feedback is positive, the rest are complaints.
pub fn sentiment(category: usize) -> &'static str {
    if CATEGORIES[category].1 == "feedback" { "positive" } else { "negative" }
}

/// `count` tickets created two minutes apart and ending just before `now` (epoch seconds); about
/// `triaged_share` of them already carry an agent's category, priority, type and the `triaged` tag.
pub fn tickets(count: u64, seed: u64, now: i64, triaged_share: f64) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut users = BTreeMap::new();
    for (i, id) in AGENT_IDS.iter().enumerate() {
        users.insert(*id, User { id: *id, name: format!("Agent {}", i + 1), role: Role::Agent, organization_id: None });
    }
    let mut tickets = BTreeMap::new();
    let mut comments = BTreeMap::new();
    let mut comment_id = 40_000_000_000u64;
    for id in 1..=count {
        let (language, texts, reply, note) = LANGUAGES[rng.random_range(0..LANGUAGES.len())];
        let category = rng.random_range(0..CATEGORIES.len());
        let (subject, body) = texts[category];
        let requester = 362_000_000_000 + id;
        let organization = (id % 3 != 0).then_some(363_000_000_000 + id % 7);
        users.insert(
            requester,
            User { id: requester, name: format!("Customer {id}"), role: Role::EndUser, organization_id: organization },
        );
        let created = now - 120 * (count - id + 1) as i64;
        let triaged = rng.random_bool(triaged_share);
        let mut tags = vec![language.to_owned()];
        if rng.random_bool(0.3) {
            tags.push(EXTRA_TAGS[rng.random_range(0..EXTRA_TAGS.len())].to_owned());
        }
        let mut custom = BTreeMap::new();
        custom.insert(CATEGORY_FIELD_ID, Value::Null);
        custom.insert(SENTIMENT_FIELD_ID, Value::Null);
        custom.insert(LANGUAGE_FIELD_ID, Value::Null);
        let (mut priority, mut kind, mut status) = (None, None, "new");
        if triaged {
            custom.insert(CATEGORY_FIELD_ID, Value::from(CATEGORIES[category].1));
            custom.insert(SENTIMENT_FIELD_ID, Value::from(sentiment(category)));
            custom.insert(LANGUAGE_FIELD_ID, Value::from(language));
            tags.push(CATEGORIES[category].1.to_owned());
            tags.push("triaged".to_owned());
            priority = Some(PRIORITIES[rng.random_range(0..PRIORITIES.len())].to_owned());
            kind = Some(TYPES[rng.random_range(0..TYPES.len())].to_owned());
            status = ["open", "pending", "solved"][rng.random_range(0..3)];
        }
        let mut conversation = vec![Comment {
            id: comment_id,
            author_id: requester,
            body: body.to_owned(),
            public: true,
            created_at: created,
        }];
        comment_id += 1;
        let replies = if triaged { rng.random_range(1..=3) } else { rng.random_range(0..=1) };
        for r in 0..replies {
            let private = r % 2 == 1;
            conversation.push(Comment {
                id: comment_id,
                author_id: AGENT_IDS[rng.random_range(0..AGENT_IDS.len())],
                body: if private { note } else { reply }.to_owned(),
                public: !private,
                created_at: created + 30 * (r as i64 + 1),
            });
            comment_id += 1;
        }
        let updated = conversation.last().map_or(created, |c| c.created_at);
        tags.sort();
        tags.dedup();
        tickets.insert(
            id,
            Ticket {
                id,
                created_at: created,
                updated_at: updated,
                subject: subject.to_owned(),
                description: body.to_owned(),
                priority,
                kind,
                status: status.to_owned(),
                requester_id: requester,
                organization_id: organization,
                assignee_id: triaged.then_some(AGENT_IDS[0]),
                tags,
                custom,
            },
        );
        comments.insert(id, conversation);
    }
    Generated { tickets, comments, users, next_comment_id: comment_id }
}
