<?php
define('DB_PASSWORD', getenv('DB_PASSWORD'));
define('API_TOKEN', '');
define('MAIL_PASSWORD', $_ENV['MAIL_PASSWORD']);
