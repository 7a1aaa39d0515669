//! Generated tickets: several languages, a conversation per ticket (the customer's messages, agents'
//! public replies and private notes), tags, the "Category" dropdown, and a share already triaged by
//! agents (their category, sentiment, language, priority, type and `triaged` tag are the ground truth
//! for `eval`).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::{CATEGORY_FIELD, Conversation, LANGUAGE_FIELD, SENTIMENT_FIELD, SUMMARY_FIELD, Ticket};

/// The Category dropdown's choices, as Freshdesk stores them (the label is the value).
pub const CATEGORIES: [&str; 5] = ["Billing", "Technical issue", "Shipping", "Account access", "Feedback"];

/// The Sentiment dropdown's choices.
pub const SENTIMENTS: [&str; 3] = ["Positive", "Neutral", "Negative"];

/// The account's ticket types (the `ticket_type` field's choices, Freshdesk's defaults).
pub const TICKET_TYPES: [&str; 5] = ["Question", "Incident", "Problem", "Feature Request", "Refund"];

/// (language, [(subject, first message)] per category in [`CATEGORIES`] order, a follow-up from the
/// customer, an agent's public reply, a private note).
type Language = (&'static str, [(&'static str, &'static str); 5], &'static str, &'static str, &'static str);

const LANGUAGES: [Language; 4] = [
    (
        "en",
        [
            ("Invoice charged twice", "Hi, my bank statement shows the March invoice twice. Could you refund one?"),
            ("Export keeps failing", "The CSV export stops at 90% with an error. This started after the update."),
            ("Order not delivered yet", "My order #5521 was due on Friday and the tracking page has not changed."),
            ("Two-factor code never arrives", "I cannot sign in because the SMS code never reaches my phone."),
            ("Love the new dashboard", "The new dashboard is great. Could you add a dark mode as well?"),
        ],
        "Any news on this? It is still not solved on my side.",
        "Thanks for the details, we are checking this with the team now.",
        "Same issue reported by two other customers this week.",
    ),
    (
        "de",
        [
            ("Rechnung doppelt bezahlt", "Hallo, die Märzrechnung wurde zweimal abgebucht. Bitte einmal erstatten."),
            ("Synchronisierung bricht ab", "Die Synchronisierung bricht seit gestern mit Fehler 500 ab."),
            ("Lieferung fehlt", "Meine Bestellung sollte Freitag kommen, die Sendungsverfolgung steht still."),
            ("Anmeldung unmöglich", "Der Bestätigungscode kommt nicht an, ich kann mich nicht anmelden."),
            ("Großes Lob", "Der Support war super. Eine Exportfunktion nach Excel wäre toll."),
        ],
        "Gibt es schon Neuigkeiten? Das Problem besteht weiterhin.",
        "Danke für die Angaben, wir prüfen das gerade.",
        "Kunde ist Großkunde, bitte bevorzugt behandeln.",
    ),
    (
        "fr",
        [
            ("Prélèvement en double", "Bonjour, la facture de mars a été prélevée deux fois. Merci de rembourser."),
            ("L'application plante", "L'application se ferme dès que j'ouvre un rapport depuis la mise à jour."),
            ("Colis introuvable", "Le suivi de ma commande n'a pas bougé depuis six jours."),
            ("Compte bloqué", "Mon compte est bloqué après trois essais de mot de passe."),
            ("Bravo à l'équipe", "Très bon service. Un mode hors ligne serait apprécié."),
        ],
        "Des nouvelles ? Le problème persiste toujours.",
        "Merci pour ces informations, nous regardons cela tout de suite.",
        "Vérifier le paiement dans Stripe avant de répondre.",
    ),
    (
        "es",
        [
            ("Cobro repetido", "Hola, me han cobrado dos veces la factura de marzo. ¿Pueden devolver uno?"),
            ("Error al importar", "Al importar el archivo aparece un error y no se guarda nada."),
            ("Pedido retrasado", "Mi pedido debía llegar el viernes y sigue sin moverse."),
            ("No puedo entrar", "No recibo el correo para restablecer la contraseña."),
            ("Sugerencia", "Me gusta mucho la aplicación; sería útil poder compartir informes."),
        ],
        "¿Hay novedades? Sigo con el mismo problema.",
        "Gracias por los detalles, lo estamos revisando.",
        "Revisar con el equipo de pagos antes de contestar.",
    ),
];

const EXTRA_TAGS: [&str; 4] = ["vip", "web", "mobile", "newsletter"];

/// The companies requesters belong to: (id, name).
pub const COMPANIES: [(u64, &str); 5] = [
    (80_000_000_001, "Acme Retail GmbH"),
    (80_000_000_002, "Bistro Lumière SARL"),
    (80_000_000_003, "Northwind Traders Ltd"),
    (80_000_000_004, "Café Andaluz S.L."),
    (80_000_000_005, "Globex Logistics Inc"),
];

/// The ids of the generated agents (the API key's agent is the first).
pub const AGENT_IDS: [u64; 3] = [70_000_000_001, 70_000_000_002, 70_000_000_003];

/// What [`tickets`] builds.
pub struct Generated {
    pub tickets: BTreeMap<u64, Ticket>,
    pub conversations: BTreeMap<u64, Vec<Conversation>>,
    pub next_conversation_id: u64,
}

/// The requester id of ticket `id` (one customer per ticket).
pub fn requester_of(id: u64) -> u64 {
    60_000_000_000 + id
}

/// `count` tickets created two minutes apart, ending just before `now` (epoch seconds); about
/// `triaged_share` of them carry an agent's category, priority, type and the `triaged` tag.
pub fn tickets(count: u64, seed: u64, now: i64, triaged_share: f64) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tickets = BTreeMap::new();
    let mut conversations = BTreeMap::new();
    let mut conversation_id = 90_000_000_000u64;
    for id in 1..=count {
        let (language, texts, follow_up, reply, note) = LANGUAGES[rng.random_range(0..LANGUAGES.len())];
        let category = rng.random_range(0..CATEGORIES.len());
        let (subject, body) = texts[category];
        let created = now - 120 * (count - id + 1) as i64;
        let triaged = rng.random_bool(triaged_share);
        let mut tags = vec![language.to_owned()];
        if rng.random_bool(0.3) {
            tags.push(EXTRA_TAGS[rng.random_range(0..EXTRA_TAGS.len())].to_owned());
        }
        let mut custom = BTreeMap::new();
        for field in [CATEGORY_FIELD, SENTIMENT_FIELD, LANGUAGE_FIELD, SUMMARY_FIELD] {
            custom.insert(field.to_owned(), Value::Null);
        }
        // Freshdesk gives every ticket a priority (Low unless set) and an Open status.
        let (mut priority, mut kind, mut status) = (1u8, None, 2u8);
        if triaged {
            custom.insert(CATEGORY_FIELD.to_owned(), Value::from(CATEGORIES[category]));
            // Derived, not drawn, so the seeded draws (and every other ticket) stay as they were.
            let sentiment = match category {
                4 => "Positive",
                _ if id % 4 == 0 => "Neutral",
                _ => "Negative",
            };
            custom.insert(SENTIMENT_FIELD.to_owned(), Value::from(sentiment));
            custom.insert(LANGUAGE_FIELD.to_owned(), Value::from(language));
            tags.push("triaged".to_owned());
            priority = rng.random_range(1..=4);
            kind = Some(TICKET_TYPES[rng.random_range(0..TICKET_TYPES.len())].to_owned());
            status = [2, 3, 4][rng.random_range(0..3)];
        }
        let mut conversation = Vec::new();
        let replies = if triaged { rng.random_range(1..=4) } else { rng.random_range(0..=2) };
        for r in 0..replies {
            // Alternating: an agent's reply, the customer's follow-up, a private note, ...
            let (text, incoming, private, user) = match r % 3 {
                0 => (reply, false, false, AGENT_IDS[rng.random_range(0..AGENT_IDS.len())]),
                1 => (follow_up, true, false, requester_of(id)),
                _ => (note, false, true, AGENT_IDS[rng.random_range(0..AGENT_IDS.len())]),
            };
            conversation.push(Conversation {
                id: conversation_id,
                user_id: user,
                body_text: text.to_owned(),
                incoming,
                private,
                created_at: created + 30 * (r as i64 + 1),
            });
            conversation_id += 1;
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
                status,
                kind,
                requester_id: requester_of(id),
                company_id: (id % 3 != 0).then_some(COMPANIES[(id % 5) as usize].0),
                responder_id: triaged.then_some(AGENT_IDS[0]),
                tags,
                custom,
            },
        );
        conversations.insert(id, conversation);
    }
    Generated { tickets, conversations, next_conversation_id: conversation_id }
}
